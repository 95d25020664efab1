"""The toy world of the embedded default model: coloured objects bouncing with a sound at every impact.

scenes   seeded clips (video [49, 64, 64, 3], 48 kHz audio) with exact impact times; mp4 preview CLI
sounds   impact timbres per surface (wood, metal, glass, drum)
captions caption templates, vocabulary, fixed eval prompt/seed pairs
detectors  video impacts, audio onsets, AV sync offsets, colour and sound classifiers

Plain numpy; nothing is imported here so `python -m toy.scenes` runs without the rest of the pack.
"""
