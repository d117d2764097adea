"""snn-hub's built-in plugins, registered through the same ``snn_hub`` entry points as any other."""
