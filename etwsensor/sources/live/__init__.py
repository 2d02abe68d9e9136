"""Live tracing on Windows: session plan, session lifecycle, EVENT_RECORD structures, callback, health,
enrichment.

Only ``win32.load`` (the DLLs) and the Windows half of ``enrich.py`` need Windows; the lifecycle takes its
advapi32 as an argument, so everything else runs on Linux against a simulated advapi32 in the tests.
"""
