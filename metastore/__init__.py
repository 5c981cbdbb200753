"""The metadata store with versioned migrations: SQLite (the embedded default, also the provider's
store) and PostgreSQL (``database_url``) behind one ``Database`` API (``open_database``)."""
