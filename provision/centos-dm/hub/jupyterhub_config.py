# JupyterHub configuration of a cablab cluster. Static: every value comes from
# cablab.json (rendered from the cluster spec) and every rule from cablab_hub.py,
# both delivered beside this file as docker swarm configs. Change the spec, not
# these files.
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent  # the bundle's files, beside this one (traitlets' loader sets __file__)
sys.path.insert(0, str(HERE))

import cablab_hub  # noqa: E402

cablab_hub.configure(get_config(), json.loads((HERE / "cablab.json").read_text(encoding="utf-8")))  # noqa: F821
