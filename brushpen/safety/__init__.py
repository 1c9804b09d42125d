"""The deepfake checker and provenance marks: the detector of AI-made images (its data, model,
training, calibration and explanations), the invisible watermark every studio image carries
(`watermark`), and the read-back of those marks. A model family: it uses `store`, `config` and
`errors`, never `generators`, `api`, `studio_ui` or `cli`."""
