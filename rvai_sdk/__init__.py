"""rvai_sdk: typed ML inference pipelines, served from one process or a cluster.

Import what you need from the submodules (the import paths are part of the
public contract)::

    from rvai_sdk.types import Integer, Image
    from rvai_sdk.data import Inputs, Outputs, Parameters, State
    from rvai_sdk.cell import Cell, cell
    from rvai_sdk.pipeline import PipelineFactory
    from rvai_sdk.runtime import init, Inference
"""

__version__ = "0.1.0"
