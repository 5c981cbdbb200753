"""An on-premises server's membership of a vault: registering with a key file, the identity
kept in its state directory, and its link to the cloud (channel, heartbeat, status)."""
