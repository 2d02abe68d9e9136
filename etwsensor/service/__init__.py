"""etwsensor as a Windows service: the ``trace`` pipeline run unattended from a configuration file.

``runner`` is the service's work, OS-independent and tested with the simulated advapi32; ``windows`` is the
thin pywin32 layer (the service control dispatcher, SCM registration, the Event Log); ``cli`` is
``etwsensor service install|uninstall|start|stop|status|run``.
"""
