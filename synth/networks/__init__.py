"""StyleGAN2 networks with a factored condition embedding, their checkpoint format
(``checkpoint``: safetensors + JSON, nothing executable) and the safe official-checkpoint importer.

``Generator`` / ``Discriminator`` follow the official parameter names (see ``networks.py`` for
the factored ``mapping.embed.<factor>`` embedding); ``legacy.import_official`` loads official
StyleGAN2-ADA snapshot pickles without executing their embedded code.
"""
from .legacy import ImportReport, LegacyImportError, import_official, load_official_pickle
from .networks import (
    Discriminator,
    FactoredEmbedding,
    Generator,
    MappingNetwork,
    SynthesisNetwork,
    from_init_kwargs,
)

__all__ = [
    "Generator",
    "Discriminator",
    "MappingNetwork",
    "SynthesisNetwork",
    "FactoredEmbedding",
    "from_init_kwargs",
    "import_official",
    "load_official_pickle",
    "ImportReport",
    "LegacyImportError",
]
