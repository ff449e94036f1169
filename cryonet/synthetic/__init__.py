"""Synthetic twin scenes: the offline default data every chapter runs on.

A twin scene imitates the raw inputs of one study region (Sentinel-2 L2A bands, a DEM, Sentinel-1 coherence and
phase, reference polygons), simulated from simple physics so that the difficulty of the real problem holds: debris
on the glacier looks like the moraine and rock around it in the optical bands and is told apart by terrain, InSAR
coherence and texture.

Modules, in the order the generator calls them: :mod:`~cryonet.synthetic.terrain` (relief and valleys),
:mod:`~cryonet.synthetic.glaciers` (mass budget, debris, lakes, surface types), :mod:`~cryonet.synthetic.optics`
(spectra, illumination, noise), :mod:`~cryonet.synthetic.insar` (12-day pair), :mod:`~cryonet.synthetic.labels`
(polygons) and :mod:`~cryonet.synthetic.generator` (grids, files, ``scene.json``).
"""

from cryonet.synthetic.generator import GENERATOR_VERSION, TwinArrays, generate_scene, synthesize

__all__ = ["GENERATOR_VERSION", "TwinArrays", "generate_scene", "synthesize"]
