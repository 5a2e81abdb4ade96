"""dcicore: the computing core of the CERL teaching book.

Importing the package registers the environment ``dcicore/DCI-v0`` with Gymnasium::

    import gymnasium as gym
    import dcicore
    env = gym.make("dcicore/DCI-v0", config=dcicore.SystemConfig(num_devices=10))
"""

import gymnasium as _gym

from dcicore.config import SystemConfig

__version__ = "0.1.0"
__all__ = ["SystemConfig", "__version__"]

if "dcicore/DCI-v0" not in _gym.registry:
    _gym.register(id="dcicore/DCI-v0", entry_point="dcicore.env:DCIEnv")
