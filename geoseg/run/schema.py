"""Building blocks of the job-file models, shared by the job (:mod:`geoseg.run.jobspec`) and the
methods' own ``method:`` blocks (:mod:`geoseg.run.methods`): unknown keys are errors everywhere."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Largest random seed (NumPy's legacy generators and most tools take 32-bit seeds).
MAX_SEED = 2**32 - 1


class StrictModel(BaseModel):
    """A frozen model that refuses unknown keys, so a typo is an error with the key's location."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassSpec(StrictModel):
    """One class of the reference's legend: id (0..254; 255 is nodata), name, colour ``#rrggbb``."""

    id: int = Field(ge=0, le=254)
    name: str = Field(min_length=1, max_length=200)
    #: ``None``: the reference's colour table, else a palette colour (see the legend order in README).
    color: str | None = Field(None, pattern=r"^#[0-9A-Fa-f]{6}$")
