"""dtypepolicy: mixed-precision policies, autocasting variables, float8 and loss scaling on JAX.

Example:
  >>> import dtypepolicy as dp
  >>> policy = dp.get("mixed_bfloat16")
  >>> policy.variable_dtype, policy.compute_dtype
  ('float32', 'bfloat16')
"""

from dtypepolicy import float8, loss_scale, quantization
from dtypepolicy._autocast import autocast_scope
from dtypepolicy._defaults import dtype_policy, policy_scope, set_dtype_policy
from dtypepolicy._dot_formulation import describe_dot
from dtypepolicy._policy import DTypePolicy, QuantizedDTypePolicy, QuantizedFloat8DTypePolicy
from dtypepolicy._policy_map import DTypePolicyMap, PolicyMatch
from dtypepolicy._serialization import deserialize, get, serialize
from dtypepolicy._stateless import StatelessScope
from dtypepolicy._strict import DtypeUpcastError, DtypeUpcastWarning, set_strict, strict_mode
from dtypepolicy._variable import Variable

__all__ = [
    "DTypePolicy",
    "DTypePolicyMap",
    "DtypeUpcastError",
    "DtypeUpcastWarning",
    "PolicyMatch",
    "QuantizedDTypePolicy",
    "QuantizedFloat8DTypePolicy",
    "StatelessScope",
    "Variable",
    "autocast_scope",
    "describe_dot",
    "deserialize",
    "dtype_policy",
    "float8",
    "get",
    "loss_scale",
    "policy_scope",
    "quantization",
    "serialize",
    "set_dtype_policy",
    "set_strict",
    "strict_mode",
]

__version__ = "0.1.0"
