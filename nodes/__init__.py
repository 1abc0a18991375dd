"""ComfyUI glue over ``core``. The node classes arrive with the node-pack work
(issue 6); until then the pack registers no nodes, and ComfyUI loads it cleanly."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
