"""Pushing status changes to the app: signed outbound webhooks from an outbox.

  config.py      the RECEIVER_PUSH_* settings: endpoints, secrets, events, timeout, schedule
  payload.py     what a push says (one builder for every event type)
  signing.py     the Standard Webhooks headers of one attempt
  dispatcher.py  the task that claims owed pushes, POSTs them, and records each attempt

The push rows themselves are written by the store's rules (receiver.store.rules.owe_push), in
the transaction of the change they report.
"""
