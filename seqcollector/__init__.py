"""seqcollector: a replayable, event-sourced Event Collector for a submission sequencer."""

__version__ = "0.1.0"
