import sys
from pathlib import Path

# the core test builders (`corekit`, `rewardkit`) live beside the unit tests
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
