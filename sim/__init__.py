"""Simulated worlds that drive seqcollector: synthetic chains (fast mode) and, later, eth-tester."""
