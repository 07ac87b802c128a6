"""Alembic environment: optpipe runs migrations itself (`HistoryStore.open`) on the connection it
hands over in `config.attributes["connection"]`; there is no alembic.ini."""

from alembic import context

from optpipe.history.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
