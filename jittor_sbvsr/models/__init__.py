"""The three networks of Self-Blind-VSR."""
from .flow_pwc import Flow_PWC  # noqa: F401
from .kernel_net import KernelNet  # noqa: F401
from .pwc_recons import PWC_Recons  # noqa: F401
