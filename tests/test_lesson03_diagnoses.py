"""Lesson 3's public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
from tests.notebook_code import public_diagnosis

LESSON = "03_ip_adapter"
EXERCISES = lesson(LESSON).EXERCISES


@pytest.mark.parametrize("mistake,expected", [
    ("image_projection__layer_norm_before_reshape", "before the reshape"),
    ("image_projection__tokens_channel_major", "(C, T) instead of (T, C)"),
    ("image_projection__norm_without_affine", "weight and bias left out"),
    ("decoupled_cross_attention__scale_ignored", "scale ignored"),
    ("decoupled_cross_attention__scale_on_text_branch", "text branch instead"),
    ("decoupled_cross_attention__concatenated_single_softmax", "ONE softmax"),
    ("decoupled_cross_attention__frozen_kv_for_image", "to_k_ip / to_v_ip unused"),
    ("decoupled_cross_attention__image_tokens_first", "they are the last"),
    ("decoupled_cross_attention__branches_projected_separately", "bias counted twice"),
    ("decoupled_cross_attention__calls_attention_module", "calls"),
    ("ip_layer_ids__ids_from_zero", "counted from 0"),
    ("ip_layer_ids__consecutive_ids", "consecutive ids"),
    ("ip_layer_ids__down_mid_up_order", "UP blocks, then the MID block"),
    ("ip_layer_ids__self_attention_numbered_too", "attn1 processors must get -1"),
    ("ip_adapter_unet__scale_ignored", "scale argument ignored"),
    ("ip_adapter_unet__uses_diffusers_loader", "calls"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message
