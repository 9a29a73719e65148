"""Series 7 "Post-SD Advances": references, weights, comparisons and checks.

Kept deliberately light: nbgrader imports ``grader.nbgrader_plugins`` in-process, and
a student's first ``import grader`` should not pay for torch or diffusers.
"""

__version__ = "0.1.0"

LESSONS = (
    "01_controlnet",
    "02_controlnet_in_practice",
    "03_ip_adapter",
    "04_score_functions_and_sdes",
    "05_flow_matching",
    "06_consistency_models",
    "07_latent_consistency_and_turbo",
    "08_the_speed_landscape",
    "09_sdxl",
    "10_diffusion_transformers",
    "11_sd3_and_flux",
    "12_z_image",
)
