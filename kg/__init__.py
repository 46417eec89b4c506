"""kgpipe's knowledge-graph core: graph arrays, loaders, TransE and entity linking.

`kg` imports nothing from `encoders` or `pipeline`; everything else stands on it.
"""

from kg.errors import KGFormatError, KGPipeError, UnknownEntityError, UnknownFormatError
from kg.graph import KnowledgeGraph
from kg.io import FORMATS, bundled_kg_path, load_kg

__all__ = [
    "FORMATS",
    "KGFormatError",
    "KGPipeError",
    "KnowledgeGraph",
    "UnknownEntityError",
    "UnknownFormatError",
    "bundled_kg_path",
    "load_kg",
]
