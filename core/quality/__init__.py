"""Where quality is measured: spatial quality maps, IQA-guided selection, regions, metrics."""
