"""Search space derived from a TAO-format train schema, and the trial's rendered spec.

```python
schema = TrainSchema.load(path)
space = SearchSpace.build(schema, load_space_overrides(space_file_or_None),
                          context={"dataset.num_classes": 5})
params = space.suggest(trial)          # {dotted.path: value}, parents first
spec = render_spec(template, {**params, **run_values}, schema)
```
"""

from automl.search_space.locations import (
    default_schema_path,
    default_space_path,
    default_template_path,
    search_spaces_dir,
)
from automl.search_space.overrides import ParamOverride, SpaceOverrides, load_space_overrides
from automl.search_space.render import load_spec_template, render_spec, validate_spec, write_spec
from automl.search_space.schema import SchemaField, TrainSchema
from automl.search_space.space import SearchSpace

__all__ = [
    "ParamOverride",
    "SchemaField",
    "SearchSpace",
    "SpaceOverrides",
    "TrainSchema",
    "default_schema_path",
    "default_space_path",
    "default_template_path",
    "load_space_overrides",
    "load_spec_template",
    "render_spec",
    "search_spaces_dir",
    "validate_spec",
    "write_spec",
]
