"""Projection: find the w (or w+) of an aligned photo for a chosen condition label.

The StyleGAN2 projector (Karras et al. 2020, NVlabs ``projector.py``), made conditional:
optimisation starts from the *label's* mean w (over many z), perturbs w with noise that ramps
down over the first 75% of the steps, ramps the learning rate up and then down (cosine), and
optimises the per-pixel noise buffers as well, with the multi-scale autocorrelation
regulariser that keeps them noise-like.  The distance is

* ``lpips-vgg`` / ``lpips-alex``: LPIPS (``lpips`` package) when the torchvision backbone
  weights are on disk (``--lpips-weights FILE`` or the torch hub cache); nothing is ever
  downloaded: the backbone is built with random weights and loaded from the local file, and
  LPIPS's linear layers ship inside the ``lpips`` package;
* ``pyramid-l2`` (the fallback): mean squared pixel error summed over an image pyramid
  (full size, 1/2, 1/4, ... down to 4 px), so coarse shape and fine detail both count;
  ``+d-features`` adds the discriminator's block features when the checkpoint has a D.

A projected face keeps the label it was projected for.  ``synth project`` also fits an *anchor
z*, the z whose w at that label is nearest to the projection (:func:`anchor_z`), and the face
moves to another label c' as ``w + mapping(z, c') - mapping(z, c)``: the generator's conditional
mapping decides what the new label changes, as in a seed's morph, and what the mapping cannot
reach stays as it is.  Without an anchor (``--no-z-anchor``, or an NVlabs file) the move is
``w + mean_w(c') - mean_w(c)``.  Both reproduce the projection exactly at c' = c, psi = 1
(:func:`identity_ws`, used by ``synth morph --w`` and ``synth generate --w``).  The optimised
noise buffers travel in ``projected_w.npz`` and are put in place while the identity is rendered
(:func:`projected_noise`).

The code, one job per module (``synth.synthesis.project`` re-exports the public names, so
``from synth.synthesis.project import project, load_projected_w, ...`` is the usual import):

* :mod:`~synth.synthesis.projection.inputs`: the photos and the label;
* :mod:`~synth.synthesis.projection.distances`: the distances and :func:`make_distance`;
* :mod:`~synth.synthesis.projection.optimise`: :func:`project`, :func:`anchor_z` and the noise
  buffers;
* :mod:`~synth.synthesis.projection.saved`: what ``synth project`` writes, and
  :func:`load_projected_w`;
* :mod:`~synth.synthesis.projection.identity`: using a projected identity
  (:class:`IdentityRenderer`, :func:`plan_identity`).

Imports run one way: inputs and distances stand alone, saved uses optimise, and identity uses
optimise and saved.
"""
