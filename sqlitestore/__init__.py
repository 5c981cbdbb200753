"""The embedded SQLite store with versioned migrations, used by the cloud service and the provider."""
