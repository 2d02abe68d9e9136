"""Live tracing on Windows (issue 6): session plan, EVENT_RECORD structures, callback, health, enrichment.

Everything but ``session.py`` and the Windows half of ``enrich.py`` is OS-independent and tested on
Linux; those two import ``etw`` (pywintrace) and ``ctypes.windll`` lazily, on Windows only.
"""
