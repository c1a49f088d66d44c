"""The tests' tiny GRPO run as a config file (for the launcher in subprocess tests).

python launch/train_grpo.py --config=tests/tiny_train_config.py --config.workdir=/tmp/x
"""

from tests.test_train import tiny_config


def get_config():
    return tiny_config("/tmp/ifrl_jax/tiny_test")
