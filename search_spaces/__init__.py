"""Train schemas and curated search spaces per network (``dino/``), shipped as package
data so an installed ``automl`` finds them; see ``README.md`` in this folder."""
