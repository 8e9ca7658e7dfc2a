"""Data layer: file formats, converters, synthetic benchmark, mining, datasets."""
