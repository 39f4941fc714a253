"""The search spaces of the paper (Table 2) and the reference architectures, by name.

    >>> import search_spaces
    >>> space = search_spaces.get_search_space("proxyless")
    >>> space.num_decisions
    73

Importing this package registers the spaces and reference models in `tunas_keras.registry`,
the one place where their names are looked up (and which imports this package on the first
lookup). A new space is a module here plus one entry below; the tests iterate the registry.
"""

from __future__ import annotations

from search_spaces import reference
from search_spaces.mobilenet_v3_like import MOBILENET_V3_LIKE
from search_spaces.proxyless import PROXYLESS, PROXYLESS_ENLARGED
from tunas_keras import registry
from tunas_keras.registry import ALIASES, SEARCH_SPACES, get_search_space, reference_architecture, reference_spec

# In the order of the paper's Table 2.
for _space in (PROXYLESS, PROXYLESS_ENLARGED, MOBILENET_V3_LIKE):
    registry.register_search_space(_space)
for _reference in reference.REFERENCES:
    registry.register_reference(_reference)
REFERENCE_NAMES = tuple(registry.REFERENCES)

__all__ = [
    "ALIASES",
    "REFERENCE_NAMES",
    "SEARCH_SPACES",
    "get_search_space",
    "reference",
    "reference_architecture",
    "reference_spec",
]
