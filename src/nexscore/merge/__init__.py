"""Families of model variants built with mergekit (`nex merge`).

    >>> from nexscore.merge import read_family, build_family
    >>> result = build_family(read_family("family.yaml"), "runs/family")

See `nexscore.merge.spec` for the FAMILY.yaml format. Importing this package imports neither
torch nor mergekit; building a family does.
"""

from .build import (FAMILY_JSON, FamilyResult, MergeError, build_family, family_variants, read_family_json,
                    source_layers)
from .sources import check_same_architecture, local_model_dir, noise_copy
from .spec import FamilySpec, VariantPlan, parse_family, read_family

__all__ = ["FAMILY_JSON", "FamilyResult", "MergeError", "build_family", "family_variants", "read_family_json",
           "source_layers", "check_same_architecture", "local_model_dir", "noise_copy", "FamilySpec", "VariantPlan",
           "parse_family", "read_family"]
