"""The mask decoder for many prompts of one image, with prompt-independent work done once.

:class:`MaskDecoder.forward <napari_mobilesam.model.mask_decoder.MaskDecoder>` copies the
(256, 64, 64) image embedding once per prompt and projects it again for every prompt. This
module computes the same function with three changes that matter on a CPU, where the
decoder's time goes to moving 4096 x 256 image tensors, not to arithmetic:

1. The first block's image-side projections depend only on the image (when no mask prompt
   is given), so they are computed once per image (:class:`ImageDecoderCache`).
2. Attention between a few tokens and 4096 image positions is evaluated in the 256-wide
   image space with the token-side projections folded in, instead of projecting the image
   for every prompt. For token-to-image attention this uses
   ``softmax(q (k W_k^T + b_k)^T) == softmax((q W_k) k^T)`` (the bias term is constant
   along the softmax axis) and ``P (v W_v^T + b_v) == (P v) W_v^T + b_v`` (rows of P sum
   to 1); for image-to-token attention the output projection is folded into the values.
3. The two stride-2 transposed convolutions of the upscaling are applied as one per-pixel
   MLP in a channels-last layout, and only the mask tokens that will be returned are used.

Results equal :class:`MaskDecoder` to float32 rounding (about 1e-6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from napari_mobilesam.model.mask_decoder import MaskDecoder
from napari_mobilesam.model.transformer import Attention

#: Prompts upscaled together: small enough for the (4096 * 16, 32) intermediates of a
#: chunk to stay in the CPU's cache.
UPSCALE_CHUNK = 2


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, heads, N, D / heads)."""
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _tokens_attend_image(
    attn: Attention, q: torch.Tensor, k_image: torch.Tensor, v_image: torch.Tensor
) -> torch.Tensor:
    """Token-to-image attention with the image-side projections folded into the tokens.

    q: (B, T, C) tokens; k_image, v_image: (B or 1, N, C) image. Returns (B, T, C).
    """
    h = attn.num_heads
    d = attn.internal_dim // h
    b, t, c = q.shape
    qh = _heads(attn.q_proj(q), h) / math.sqrt(d)  # (B, h, T, d)
    w_k = attn.k_proj.weight.view(h, d, c)
    q_img = torch.einsum("bhtd,hdc->bhtc", qh, w_k).reshape(b, h * t, c)
    probs = torch.softmax(q_img @ k_image.transpose(1, 2), dim=-1)  # (B, h*T, N)
    pooled = (probs @ v_image).view(b, h, t, c)  # attention-weighted image, per head
    w_v = attn.v_proj.weight.view(h, d, c)
    out = torch.einsum("bhtc,hdc->bhtd", pooled, w_v) + attn.v_proj.bias.view(1, h, 1, d)
    return attn.out_proj(_merge_heads(out))


def _image_attends_tokens(
    attn: Attention,
    keys: torch.Tensor,
    scores: torch.Tensor,
    tokens_v: torch.Tensor,
) -> torch.Tensor:
    """Image-to-token attention added to the image tokens: ``keys + attn(...)``.

    keys: (B or 1, N, C) image tokens; scores: (B, h, T, N) scaled logits (softmax runs over
    T, with N innermost so it vectorises); tokens_v: (B, T, C) values. The output projection
    is folded into the values, and its bias spread over the heads: each head's
    probabilities sum to 1, so adding ``bias / h`` to every value adds ``bias`` once.
    Returns (B, N, C).
    """
    h = attn.num_heads
    d = attn.internal_dim // h
    b, _, t, n = scores.shape
    c = attn.embedding_dim
    probs = torch.softmax(scores, dim=2).view(b, h * t, n)
    v = _heads(attn.v_proj(tokens_v), h)  # (B, h, T, d)
    w_o = attn.out_proj.weight.view(c, h, d)
    v_out = torch.einsum("bhtd,chd->bhtc", v, w_o) + attn.out_proj.bias / h
    return torch.bmm(probs.transpose(1, 2), v_out.reshape(b, h * t, c)).add_(keys)


def _image_query_scores(
    attn: Attention, q_image: torch.Tensor, k_tokens: torch.Tensor
) -> torch.Tensor:
    """Scaled image-to-token logits (B, h, T, N) with the query projection folded into the
    tokens. q_image: (B or 1, N, C) image (with positional encoding); k_tokens: (B, T, C)."""
    h = attn.num_heads
    d = attn.internal_dim // h
    b, t, c = k_tokens.shape
    kh = _heads(attn.k_proj(k_tokens), h) / math.sqrt(d)  # (B, h, T, d)
    w_q = attn.q_proj.weight.view(h, d, c)
    k_img = torch.einsum("bhtd,hdc->bhtc", kh, w_q).reshape(b, h * t, c)
    bias = torch.einsum("bhtd,hd->bht", kh, attn.q_proj.bias.view(h, d)).reshape(b, h * t, 1)
    scores = torch.baddbmm(bias, k_img, q_image.expand(b, -1, -1).transpose(1, 2))
    return scores.view(b, h, t, -1)


@dataclass
class ImageDecoderCache:
    """Prompt-independent decoder inputs of one image.

    keys : (1, 4096, 256) image embedding plus the "no mask" embedding, channels last.
    key_pe : (1, 4096, 256) positional encoding of the embedding grid.
    k0, v0 : (1, heads, 4096, d) first block token-to-image keys and values.
    q0 : (1, heads, 4096, d) first block image-to-token queries, scaled by 1/sqrt(d).
    """

    keys: torch.Tensor
    key_pe: torch.Tensor
    k0: torch.Tensor
    v0: torch.Tensor
    q0: torch.Tensor


class BatchedMaskDecoder:
    """Decode batches of prompts against one image embedding.

    Parameters
    ----------
    decoder : MaskDecoder
        The model's decoder; its weights are used, not copied.
    image_embedding : (1, 256, 64, 64) tensor
    image_pe : (1, 256, 64, 64) tensor, ``prompt_encoder.get_dense_pe()``
    no_mask_embedding : (1, 256) tensor or None
        ``prompt_encoder.no_mask_embed.weight``; None when ``image_embedding`` already
        holds it (or a mask prompt's dense embedding).
    """

    def __init__(
        self,
        decoder: MaskDecoder,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        no_mask_embedding: torch.Tensor | None,
    ) -> None:
        self.decoder = decoder
        self.transformer = decoder.transformer
        self.embedding = image_embedding.flatten(2).transpose(1, 2)  # (1, N, C)
        self.key_pe = image_pe.flatten(2).transpose(1, 2)
        self.grid = image_embedding.shape[-2:]
        self._upscaling = self._upscaling_weights()
        keys = self.embedding
        if no_mask_embedding is not None:
            keys = keys + no_mask_embedding.view(1, 1, -1)
        self.cache = self._first_block_inputs(keys)

    def _first_block_inputs(self, keys: torch.Tensor) -> ImageDecoderCache:
        block = self.transformer.layers[0]
        t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
        h = t2i.num_heads
        k_in = keys + self.key_pe
        q0 = _heads(i2t.q_proj(k_in), h) / math.sqrt(i2t.internal_dim // h)
        return ImageDecoderCache(
            keys=keys,
            key_pe=self.key_pe,
            k0=_heads(t2i.k_proj(k_in), h),
            v0=_heads(t2i.v_proj(keys), h),
            q0=q0,
        )

    def _upscaling_weights(self) -> tuple[torch.Tensor, ...]:
        up1, norm, _, up2, _ = self.decoder.output_upscaling
        c_in, c_mid = up1.weight.shape[:2]
        c_out = up2.weight.shape[1]
        # Transposed 2x2 stride-2 convolutions as matrices whose columns run (dy, dx, channel).
        w1 = up1.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_mid)
        b1 = up1.bias.repeat(4)
        w2 = up2.weight.permute(0, 2, 3, 1).reshape(c_mid, 4 * c_out)
        b2 = up2.bias.repeat(4)
        return w1, b1, norm.weight, norm.bias, torch.tensor(norm.eps), w2, b2

    def _upscale_and_project(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, N, 256) and hypernetwork weights (B, M, 32) -> (B, M, 256, 256)."""
        w1, b1, ln_w, ln_b, eps, w2, b2 = self._upscaling
        b, n, _ = keys.shape
        c_mid = ln_w.shape[0]
        x = torch.addmm(b1, keys.reshape(b * n, -1), w1).view(b * n * 4, c_mid)
        x = F.gelu(F.layer_norm(x, (c_mid,), ln_w, ln_b, float(eps)))
        x = F.gelu(torch.addmm(b2, x, w2))  # (B*N*4, 4*32), columns (dy2, dx2, channel)
        x = x.view(b, n * 16, -1)
        m = hyper.shape[1]
        masks = torch.bmm(x, hyper.transpose(1, 2))  # (B, N*16, M)
        gh, gw = self.grid
        # Row index of a low-res pixel: 4*y + 2*dy + dy2; column: 4*x + 2*dx + dx2.
        masks = masks.view(b, gh, gw, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, m, gh * 4, gw * 4)

    def decode(
        self,
        sparse: torch.Tensor,
        dense: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompt sets.

        Parameters
        ----------
        sparse : (B, T, 256) sparse prompt embeddings.
        dense : (B, 256, 64, 64) dense embeddings of mask prompts, or None for no mask.
        multimask_output : bool
            Return the three multimask outputs instead of the single-mask output.

        Returns
        -------
        low_res_logits : (B, C, 256, 256), C = 3 or 1.
        iou_pred : (B, C)
        """
        if dense is None:
            cache = self.cache
        else:
            cache = self._first_block_inputs(self.embedding + dense.flatten(2).transpose(1, 2))
        mask_ids = range(1, self.decoder.num_mask_tokens) if multimask_output else range(1)
        masks, iou = self._decode(sparse, cache, mask_ids, UPSCALE_CHUNK)
        return masks, (iou[:, 1:] if multimask_output else iou[:, :1])

    def decode_all(self, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All four masks of B prompt sets, upscaled in one step (no Python loop over
        the batch, so the function traces into one graph for any B; see
        :class:`napari_mobilesam.model.decoder_network.DecoderNetwork`).

        Returns
        -------
        low_res_logits : (B, 4, 256, 256); mask 0 is the single-mask output.
        iou_pred : (B, 4)
        """
        return self._decode(sparse, self.cache, range(self.decoder.num_mask_tokens), None)

    def _decode(
        self,
        sparse: torch.Tensor,
        cache: ImageDecoderCache,
        mask_ids: range,
        chunk: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``mask_ids`` (B, M, 256, 256) and all IoU predictions (B, 4); the
        upscaling runs ``chunk`` prompts at a time (None: all at once)."""
        dec = self.decoder
        b = sparse.shape[0]
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        queries, keys = self._transformer(tokens, cache)
        hyper = torch.stack(
            [dec.output_hypernetworks_mlps[i](queries[:, 1 + i]) for i in mask_ids], dim=1
        )
        if chunk is None:
            masks = self._upscale_and_project(keys, hyper)
        else:
            masks = torch.cat(
                [
                    self._upscale_and_project(keys[i : i + chunk], hyper[i : i + chunk])
                    for i in range(0, b, chunk)
                ]
            )
        return masks, dec.iou_prediction_head(queries[:, 0])

    def _transformer(
        self, tokens: torch.Tensor, cache: ImageDecoderCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-way transformer: tokens (B, T, C) -> tokens (B, T, C), image (B, N, C)."""
        tf = self.transformer
        query_pe = tokens
        queries = tokens
        keys = cache.keys
        for i, block in enumerate(tf.layers):
            if block.skip_first_layer_pe:
                queries = block.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + query_pe
                queries = queries + block.self_attn(q=q, k=q, v=queries)
            queries = block.norm1(queries)

            t2i = block.cross_attn_token_to_image
            q = queries + query_pe
            keys_pe = None if i == 0 else keys + cache.key_pe
            if i == 0:
                h = t2i.num_heads
                qh = _heads(t2i.q_proj(q), h)
                b = q.shape[0]
                k0 = cache.k0.expand(b, -1, -1, -1)
                v0 = cache.v0.expand(b, -1, -1, -1)
                out = F.scaled_dot_product_attention(qh, k0, v0)
                attn_out = t2i.out_proj(_merge_heads(out))
            else:
                attn_out = _tokens_attend_image(t2i, q, keys_pe, keys)
            queries = block.norm2(queries + attn_out)
            queries = block.norm3(queries + block.mlp(queries))

            i2t = block.cross_attn_image_to_token
            k_tokens = queries + query_pe
            if i == 0:
                kh = _heads(i2t.k_proj(k_tokens), i2t.num_heads)  # (B, h, T, d)
                scores = kh @ cache.q0.transpose(-2, -1)  # (B, h, T, N)
            else:
                scores = _image_query_scores(i2t, keys_pe, k_tokens)
            keys = block.norm4(_image_attends_tokens(i2t, keys, scores, queries))

        # Only the IoU and mask tokens are read after the final attention.
        n_out = 1 + self.decoder.num_mask_tokens
        q = queries[:, :n_out] + query_pe[:, :n_out]
        attn_out = _tokens_attend_image(tf.final_attn_token_to_image, q, keys + cache.key_pe, keys)
        queries = tf.norm_final_attn(queries[:, :n_out] + attn_out)
        return queries, keys
