"""Waiting for changes instead of asking again: long polls, the change stream, deadlines.

  hub.py        in-process wake-ups: who waits on which message, and which streams listen
  waiters.py    the long poll's wait (GET /v1/messages/{id}?wait=)
  deadlines.py  decides registrations' deadlines when they fall due, once each

A write's commit wakes them (the store's `changed` hook, after the commit); with PostgreSQL, a
commit on any instance does (LISTEN/NOTIFY, receiver.store.postgres.notify).
"""
