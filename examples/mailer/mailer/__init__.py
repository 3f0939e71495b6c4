"""The mailer: drains a PostgreSQL outbox over SMTP, throttled pool-wide, retried, losing nothing.

Application side:  mailer.outbox.enqueue(conn, to=..., subject=..., body=...)
Worker side:       python -m mailer worker   (one process per DaemonPool peer)
"""
