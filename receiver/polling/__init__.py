"""Polling for late DLRs: the due queue's scheduler (scheduler.py), the providers' status
clients (twilio.py, telecom23.py, mesms.py) and what they share (base.py)."""
