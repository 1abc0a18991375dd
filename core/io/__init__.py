"""Files: reading, writing and drawing images (8/16-bit PNG, TIFF, contact sheets, heatmaps), and writing any
file atomically (:mod:`.files`)."""
