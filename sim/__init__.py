"""Simulated worlds that drive seqcollector: a synthetic chain (fast mode), an eth-tester
chain with the ProtocolState fixture, a private anvil and redis-server, a faulty RPC proxy."""
