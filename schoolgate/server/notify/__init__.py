"""Alert notifications from the collector: email (SMTP) and a signed JSON webhook.

Alerts of the severities in ``notify.immediate`` go out at once, the rest in a daily digest;
a per-school cap on immediate messages keeps a flood from spamming the recipients (beyond it,
alerts wait for the digest). The modules, one job each:

``settings``  the ``[notify]`` section of the collector's configuration
``ledger``    the state in the database: what was taken in, each message and its delivery
``compose``   what a message says, as plain text for email and JSON for the webhook
``mail``      sending over SMTP (STARTTLS or TLS, with AUTH)
``webhook``   signing and posting the JSON
``service``   the job the collector runs every ``interval_seconds``: take in, digest, deliver
"""
