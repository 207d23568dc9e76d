"""``fleetlog.act``: closing the loop — telling people (``alerts``: Alertmanager) and acting
through the scheduler. A floor above the analysis: it reads the analysis's results, and nothing
below imports it.
"""
