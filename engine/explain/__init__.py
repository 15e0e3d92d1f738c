"""The facts behind the teaching views: why each channel goes, per criterion, and what it is tied to.

Scores are never recomputed by hand: each method's own torch-pruning pruner (built by
engine.pruners, with the method's calibration) takes one interactive step on a copy of the model,
and the importance it computes and the channels it picks are recorded as they happen. So the
channels shown as cut are exactly the ones a one-step run at that ratio removes.

Results are plain dataclasses with numpy arrays; no module ever leaves this package.
`scores` (per method, criteria side by side), `coupling` (tied layers and why), `images` (feature maps,
predictions).
"""
from engine.events import result_of
from engine.explain.coupling import Coupled, coupling
from engine.explain.scores import ChannelScores, ChosenScores, Criteria, CriteriaSoFar, Explanation, channel_scores, criteria_side_by_side, explain_layer, iter_channel_scores, iter_criteria, jaccard
from engine.explain.images import FeatureMaps, ImageExplanation, Prediction, activation_stats, explain_image, feature_maps, test_image, top_predictions

__all__ = ['ChannelScores', 'ChosenScores', 'Coupled', 'Criteria', 'CriteriaSoFar', 'Explanation', 'FeatureMaps', 'ImageExplanation', 'Prediction', 'activation_stats', 'channel_scores', 'coupling', 'criteria_side_by_side', 'explain_image', 'explain_layer', 'feature_maps', 'iter_channel_scores', 'iter_criteria', 'jaccard', 'result_of', 'test_image', 'top_predictions']
