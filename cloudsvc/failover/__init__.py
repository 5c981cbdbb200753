"""Failover, failback, migration and recovery plans (see ``states`` for the state machine).

``materialise`` turns a recovery point's disk into a fixed VHD; ``recovered`` keeps the VMs
that failover makes; ``plans`` the recovery plans; ``operations`` turns a request into a job
of staged steps; ``runner`` carries jobs forward from the metadata DB (so they resume after a
restart); ``failback`` serves the block comparison of a failback; ``api`` the gRPC services.
"""
