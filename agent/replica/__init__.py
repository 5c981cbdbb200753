"""Site-to-site replication (issue 11), the recovery host's side: it holds replicas of VMs
whose primary is a host of another provider of the same vault, and serves the primaries'
cycles directly (docs/design.md, "Site-to-site data path").

Parts: ``pairings`` (which host may ship which VM here), ``store`` (the replicas: the vault
store's format per VM, point records, retention), ``disks`` (the latest point applied to VHDX
files), ``applier`` (the thread that brings the disks to each new point after the commit
was answered), ``service`` and ``replica_api`` (the Replication subset a cycle uses, with per-VM
authorisation), ``failover`` (VMs made of a replica, and the blocks a failback fetches),
``reporter`` (ReportReplica to the vault), and ``channel`` (the primary's side:
channels to recovery hosts). ``agent.daemon`` assembles them into a ``role.Replicas`` when
``replica_listen`` is set.

This module imports nothing: every agent process imports ``channel`` (a primary's cycles go
through it), and the recovery host's parts bring the vault store with them.
"""

