"""The engine names (kept free of heavy imports, for the command line and the widgets)."""

__all__ = ["ENGINES"]

#: What may run the image encoder: "auto" chooses among the others (see
#: :mod:`napari_mobilesam.engines.choice`).
ENGINES = ("auto", "torch", "openvino", "openvino-int8")
