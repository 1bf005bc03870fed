"""kinemate.eval — the field's metrics computed correctly, plus the ones it lacks.

Per frame: :func:`l1`, :func:`psnr` (float MSE), :func:`ssim` (Wang et al., Gaussian window),
LPIPS (:mod:`kinemate.eval.lpips`); per set: FID, FID-VID and FVD (:mod:`kinemate.eval.fid`,
:mod:`kinemate.eval.inception`, :mod:`kinemate.eval.video_nets`); temporal flicker
(:func:`warping_error`), pose accuracy (:func:`pose_accuracy`) and identity drift
(:func:`identity_drift`). :func:`psnr_uint8_overflow` reproduces the widely copied *wrong* PSNR.
Runs and reports: :func:`evaluate_videos`, :func:`evaluate_dataset`, :func:`write_report`,
:func:`compare_reports`. Networks load from local files only (docs/evaluation.md).
"""

from kinemate.eval.fid import frechet_distance, frechet_from_features
from kinemate.eval.flicker import warping_error
from kinemate.eval.identity import appearance_embedding, identity_drift
from kinemate.eval.metrics import l1, psnr, psnr_uint8_overflow, ssim
from kinemate.eval.networks import WEIGHT_FILES, Networks, networks_from_dir, random_networks
from kinemate.eval.pose_metrics import pose_accuracy
from kinemate.eval.report import compare_reports, load_report, write_report
from kinemate.eval.runner import (
    Protocol,
    command_generator,
    evaluate_dataset,
    evaluate_videos,
    pipeline_generator,
)

__all__ = [
    "l1", "psnr", "psnr_uint8_overflow", "ssim", "warping_error", "identity_drift", "appearance_embedding",
    "pose_accuracy", "frechet_distance", "frechet_from_features", "WEIGHT_FILES", "Networks",
    "networks_from_dir", "random_networks", "Protocol", "evaluate_videos", "evaluate_dataset",
    "command_generator", "pipeline_generator", "write_report", "compare_reports", "load_report",
]
