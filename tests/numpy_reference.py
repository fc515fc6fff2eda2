"""A float64 NumPy forward pass of the reference TokenLearner models.

Written from the reference's formulas (scenic `projects/token_learner`, ViT
`Encoder1DBlock`, ViViT `temporal_encode` / `SpaceTimeViViT`), reading a
parameter tree in the reference's layout. It shares no code with the package.
"""

import math

import numpy as np


def gelu(x):
  """Tanh-approximated GELU (flax's `nn.gelu` default)."""
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def softmax(x, axis=-1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def dense(x, p):
  y = x @ p['kernel']
  return y + p['bias'] if 'bias' in p else y


def mlp(x, p):
  return dense(gelu(dense(x, p['Dense_0'])), p['Dense_1'])


def conv3x3_same(x, kernel):
  """`[B, H, W, Ci]` * `[3, 3, Ci, Co]`, stride 1, zero padding, no bias."""
  _, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = 0
  for i in range(3):
    for j in range(3):
      out = out + padded[:, i:i + h, j:j + w] @ kernel[i, j]
  return out


def patch_embed(x, p, patch):
  """Non-overlapping patches of `x` `[B, *spatial, C]`, VALID, as one conv."""
  kernel = p['kernel']  # [*patch, Cin, Cout]
  dims = x.shape[1:-1]
  grid = [d // s for d, s in zip(dims, patch)]
  x = x[(slice(None),) + tuple(slice(0, g * s) for g, s in zip(grid, patch))]
  shape = [x.shape[0]]
  for g, s in zip(grid, patch):
    shape += [g, s]
  x = x.reshape(shape + [x.shape[-1]])
  nd = len(patch)
  order = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)]
  x = x.transpose(order + [x.ndim - 1])  # [B, *grid, *patch, Cin]
  x = x.reshape([x.shape[0]] + grid + [-1])
  return x @ kernel.reshape(-1, kernel.shape[-1]) + p['bias']


def attention(x, p):
  q, k, v = (np.einsum('bld,dhk->blhk', x, p[n]['kernel']) + p[n]['bias']
             for n in ('query', 'key', 'value'))
  logits = np.einsum('bqhk,blhk->bhql', q / np.sqrt(q.shape[-1]), k)
  out = np.einsum('bhql,blhk->bqhk', softmax(logits), v)
  return np.einsum('bqhk,hkd->bqd', out, p['out']['kernel']) + p['out']['bias']


def encoder_block(x, p):
  x = x + attention(layer_norm(x, p['LayerNorm_0']),
                    p['MultiHeadDotProductAttention_0'])
  return x + mlp(layer_norm(x, p['LayerNorm_1']), p['MlpBlock_0'])


def tokenlearner_v10(x, p, use_sum_pooling=True):
  """`[B, HW, C]` (HW square) -> `[B, S, C]`."""
  n, hw, c = x.shape
  h = int(math.isqrt(hw))
  sel = layer_norm(x.reshape(n, h, h, c), p['LayerNorm_0'])
  for i in range(3):
    sel = gelu(conv3x3_same(sel, p[f'Conv_{i}']['kernel']))
  sel = conv3x3_same(sel, p['Conv_3']['kernel'])
  weights = sigmoid(sel.reshape(n, hw, -1).transpose(0, 2, 1))  # [B, S, HW]
  weighted = weights[..., None] * x[:, None]  # [B, S, HW, C]
  return weighted.sum(2) if use_sum_pooling else weighted.mean(2)


def tokenlearner_v11_weights(x, p):
  sel = mlp(layer_norm(x, p['LayerNorm_0']), p['token_masking'])  # [B, HW, S]
  return softmax(sel.transpose(0, 2, 1), axis=-1)  # [B, S, HW]


def tokenlearner_v11(x, p):
  return np.einsum('bsi,bic->bsc', tokenlearner_v11_weights(x, p), x)


def tokenfuser(tokens, original, p, use_normalization=True):
  """`[B, S, C]`, `[B, HW, C]` -> `[B, HW, C]`."""
  if use_normalization:
    tokens = layer_norm(tokens, p['fuser_mix_norm1'])
  tokens = dense(tokens.transpose(0, 2, 1), p['Dense_0']).transpose(0, 2, 1)
  if use_normalization:
    tokens = layer_norm(tokens, p['fuser_mix_norm2'])
  mix = sigmoid(mlp(layer_norm(original, p['LayerNorm_0']), p['token_masking']))
  return np.einsum('bsc,bhs->bhc', tokens, mix)


def encoder(x, p, num_layers, temporal_dims=1, loc=None, use_v11=True,
            use_tokenfuse=False, n_cls=0):
  """The reference's `EncoderMod`/`EncoderModFuser` and a class token."""
  x = x + p['posembed_input']['pos_embedding']
  n, _, c = x.shape
  t = temporal_dims
  learner = tokenlearner_v11 if use_v11 else tokenlearner_v10
  name = 'TokenLearnerModuleV11' if use_v11 else 'TokenLearnerModule'
  for lyr in range(num_layers):
    block = p[f'encoderblock_{lyr}']
    on = loc is not None and (lyr >= loc if use_tokenfuse else lyr == loc)
    if not on:
      x = encoder_block(x, block)
      continue
    k = lyr - loc if use_tokenfuse else 0
    cls, tokens = x[:, :n_cls], x[:, n_cls:]
    hw = tokens.shape[1] // t
    residual = tokens.reshape(n * t, hw, c)
    learned = learner(residual, p[f'{name}_{k}'])
    s = learned.shape[1]
    y = encoder_block(np.concatenate([cls, learned.reshape(n, t * s, c)], 1),
                      block)
    if not use_tokenfuse:
      x = y
      continue
    fused = tokenfuser(y[:, n_cls:].reshape(n * t, s, c), residual,
                       p[f'TokenFuser_{k}']) + residual
    x = np.concatenate([y[:, :n_cls], fused.reshape(n, t * hw, c)], 1)
  return layer_norm(x, p['encoder_norm'])


def pool(x, classifier):
  if classifier == 'token':
    return x[:, 0]
  return {'gap': np.mean, 'gmp': np.max, 'gsp': np.sum}[classifier](x, axis=1)


def head(x, params):
  if 'pre_logits' in params:
    x = np.tanh(dense(x, params['pre_logits']))
  return dense(x, params['output_projection'])


def sample_frames(num_frames, n_sampled):
  """The reference's uniform temporal sampling, written out as a loop."""
  if n_sampled >= num_frames:
    return list(range(num_frames))
  step = num_frames / (n_sampled + 1)
  indices, i = [], 1
  while i * step < num_frames:
    indices.append(min(int(np.round(i * step)), num_frames - 1))
    i += 1
  return indices


def stem(x, params, model_cfg):
  """Images/videos -> `([B, T*h*w, C], T, grid)` as the reference tokenizes."""
  tok = model_cfg['tokenizer']
  size = tuple(tok['patches']['size'])
  if tok['type'] != 'video':
    y = patch_embed(x, params['embedding'], size)  # [B, h, w, C]
    return y.reshape(y.shape[0], -1, y.shape[-1]), 1, y.shape[1:3]
  tec = tok['temporal_encoding_config']
  if tec['method'] == '3d_conv':
    fh, fw, ft = size
    y = patch_embed(x, params['embedding'], (ft, fh, fw))  # [B, t, h, w, C]
    return y.reshape(y.shape[0], -1, y.shape[-1]), y.shape[1], y.shape[2:4]
  x = x[:, sample_frames(x.shape[1], tec['n_sampled_frames'])]
  n, t, h, w, c = x.shape
  y = patch_embed(x.reshape(n, t * h, w, c), params['embedding'], size[:2])
  return y.reshape(n, -1, y.shape[-1]), t, (y.shape[1] // t, y.shape[2])


def token_learner_vit(x, params, model_cfg):
  """The reference's `TokenLearnerViT` forward pass (eval mode) -> logits."""
  x = np.asarray(x, np.float64)
  tok = model_cfg['tokenizer']
  tokens, t, _ = stem(x, params, model_cfg)
  n_cls = int(model_cfg['classifier'] == 'token')
  if n_cls:
    cls = np.broadcast_to(params['cls'], (tokens.shape[0], 1, tokens.shape[2]))
    tokens = np.concatenate([cls, tokens], 1)
  loc = tok.get('tokenlearner_loc') if tok['type'] != 'patch' else None
  y = encoder(tokens, params['Transformer'], model_cfg['num_layers'], t, loc,
              tok.get('use_v11', True), tok.get('use_tokenfuse', False), n_cls)
  return head(pool(y, model_cfg['classifier']), params)


def factorised_vivit(x, params, model_cfg):
  """The reference's `SpaceTimeViViT` (ViViT model 2) forward pass -> logits."""
  x = np.asarray(x, np.float64)
  tokens, t, _ = stem(x, params, model_cfg)
  n, _, c = tokens.shape
  classifier = model_cfg['classifier']

  def body(z, part, num_layers):
    if classifier == 'token':
      cls = np.broadcast_to(params[f'cls_{part}'], (z.shape[0], 1, c))
      z = np.concatenate([cls, z], 1)
    return pool(encoder(z, params[part], num_layers), classifier)

  frames = body(tokens.reshape(n * t, -1, c), 'SpatialTransformer',
                model_cfg['spatial_transformer']['num_layers'])
  video = body(frames.reshape(n, t, c), 'TemporalTransformer',
               model_cfg['temporal_transformer']['num_layers'])
  return head(video, params)


# ------------------------------------------- X(2+1)D module slot (Figure 9)


def vector_attention(x, p, group_size):
  """Zhao et al.'s subtraction vector attention `[B, N, D]`, written per pair:
  w_ij = softmax_j(G relu(q_i - k_j) + b) per channel, y_i = W_o sum_j
  w_ij * v_j, G block-diagonal with `group_size` blocks."""
  q, k, v = (dense(x, p[n]) for n in ('query', 'key', 'value'))
  b, n, d = x.shape
  gamma = np.zeros((d, d))
  for g in range(d // group_size):
    s = slice(g * group_size, (g + 1) * group_size)
    gamma[s, s] = p['relation'][g]
  out = np.zeros((b, n, d))
  for bi in range(b):
    for i in range(n):
      logits = np.stack([np.maximum(q[bi, i] - k[bi, j], 0) @ gamma
                         for j in range(n)]) + p['relation_bias']  # [N, D]
      out[bi, i] = (softmax(logits, axis=0) * v[bi]).sum(0)
  return dense(out, p['out'])


def frame_tokens(frames, p, num_tokens):
  """TokenLearner with one 3x3 conv: `[N, H, W, D]` -> `[N, S, D]`, the mean
  over space of the input weighted by each sigmoid map."""
  n, h, w, d = frames.shape
  maps = sigmoid(conv3x3_same(frames, p['attention_conv']['kernel']))
  maps = maps.reshape(n, h * w, num_tokens)
  return np.einsum('nis,nid->nsd', maps, frames.reshape(n, h * w, d)) / (h * w)


def token_module(x, p, num_tokens, group_size):
  """TokenLearner -> vector transformer -> TokenFuser, plus the residual."""
  b, t, h, w, d = x.shape
  frames = x.reshape(b * t, h, w, d)
  tokens = frame_tokens(frames, p['tokens'], num_tokens).reshape(b, -1, d)
  tokens = tokens + vector_attention(layer_norm(tokens, p['norm']),
                                     p['vector_attention'], group_size)
  tokens = tokens.reshape(b * t, num_tokens, d)
  fused = tokenfuser(tokens, frames.reshape(b * t, h * w, d), p['fuser'])
  return x + fused.reshape(x.shape)


def spacetime_attention(x, p, axes, num_heads):
  """Pre-LN multi-head self-attention over 'joint', 'spatial' or 'temporal'
  groups of `[B, T, H, W, D]`, with the residual; with `pos_*` tables in
  `p`, factorized position logits (`SpaceTimeAttention.position`)."""
  b, t, h, w, d = x.shape
  if axes == 'joint':
    seq = x.reshape(b, t * h * w, d)
  elif axes == 'spatial':
    seq = x.reshape(b * t, h * w, d)
  else:
    seq = x.transpose(0, 2, 3, 1, 4).reshape(b * h * w, t, d)
  y = layer_norm(seq, p['norm'])
  q, k, v = (dense(y, p[n]) for n in ('query', 'key', 'value'))
  g, n, a = q.shape
  heads = lambda z: z.reshape(g, n, num_heads, a // num_heads)
  logits = np.einsum('gqhd,gkhd->ghqk', heads(q), heads(k))
  if 'pos_t' in p or 'pos_h' in p:  # Factorized position logits: q r^T.
    r = np.zeros((1, 1, 1, a))
    if 'pos_t' in p:
      r = r + p['pos_t'][:, None, None]
    if 'pos_h' in p:
      r = r + p['pos_h'][None, :, None] + p['pos_w'][None, None, :]
    r = r.reshape(n, num_heads, a // num_heads)
    logits = logits + np.einsum('gqhd,khd->ghqk', heads(q), r)
  logits = logits / np.sqrt(a // num_heads)
  out = np.einsum('ghqk,gkhd->gqhd', softmax(logits), heads(v))
  seq = seq + dense(out.reshape(g, n, a), p['out'])
  if axes == 'temporal':
    return seq.reshape(b, h, w, t, d).transpose(0, 3, 1, 2, 4)
  return seq.reshape(x.shape)


# ------------------------------ later token reductions (models.reduction)


def size_bias(sizes, proportional=True):
  """Attention logit bias `[B, N]` of token sizes `[B, N]`: log(size) (0 for
  every token without proportional attention), -1e9 for an empty slot."""
  bias = np.full(sizes.shape, -1e9)
  for index in np.ndindex(*sizes.shape):
    if sizes[index] > 0:
      bias[index] = np.log(sizes[index]) if proportional else 0.0
  return bias


def biased_attention(x, p, bias):
  """`attention` with a logit bias `[B, N]` on each key; returns the output
  `[B, N, C]`, keys and values `[B, N, H, D]` and weights `[B, H, N, N]`."""
  q, k, v = (np.einsum('bld,dhk->blhk', x, p[n]['kernel']) + p[n]['bias']
             for n in ('query', 'key', 'value'))
  logits = np.einsum('bqhk,blhk->bhql', q / np.sqrt(q.shape[-1]), k)
  weights = softmax(logits + bias[:, None, None, :])  # [B, H, N, N]
  out = np.einsum('bhql,blhk->bqhk', weights, v)
  out = np.einsum('bqhk,hkd->bqd', out, p['out']['kernel']) + p['out']['bias']
  return out, k, v, weights


def tome_merge(x, sizes, metric, r, class_token):
  """Token Merging (Bolya et al., ICLR 2023), one example at a time.

  Bipartite soft matching: even-indexed tokens form set A, odd-indexed set B;
  each A token finds its most cosine-similar B token; the r A tokens with the
  highest such similarity are averaged into their match, weighted by size
  (sizes add). A class token (index 0) is never merged. Output: the unmerged A
  tokens (by decreasing similarity, or by index with a class token), then B.
  """
  n = x.shape[1]
  r = min(r, (n - int(class_token)) // 2)
  if r <= 0:
    return x, sizes
  out_x, out_sizes = [], []
  for xb, sb, mb in zip(x, sizes, metric):
    unit = mb / np.linalg.norm(mb, axis=-1, keepdims=True)
    set_a, set_b = list(range(0, n, 2)), list(range(1, n, 2))
    best, match = [], []
    for i in set_a:
      if class_token and i == 0:
        best.append(-np.inf)
        match.append(None)
        continue
      sims = [float(unit[i] @ unit[j]) for j in set_b]
      match.append(int(np.argmax(sims)))
      best.append(max(sims))
    ranked = sorted(range(len(set_a)), key=lambda a: -best[a])  # Stable.
    merged, kept = ranked[:r], ranked[r:]
    if class_token:
      kept = sorted(kept)
    totals = [xb[j] * sb[j] for j in set_b]
    weights = [sb[j] for j in set_b]
    for a in merged:
      totals[match[a]] = totals[match[a]] + xb[set_a[a]] * sb[set_a[a]]
      weights[match[a]] = weights[match[a]] + sb[set_a[a]]
    out_x.append(np.stack([xb[set_a[a]] for a in kept] +
                          [t / w for t, w in zip(totals, weights)]))
    out_sizes.append(np.array([sb[set_a[a]] for a in kept] + weights))
  return np.stack(out_x), np.stack(out_sizes)


def evit_keep(x, cls_attention, keep_rate):
  """EViT (Liang et al., ICLR 2022), one example at a time: the class token,
  the ceil(keep_rate (N-1)) tokens it attends to most (most first), and one
  token fusing the rest, each weighted by its class attention `[B, N - 1]`."""
  others = x.shape[1] - 1
  keep = math.ceil(keep_rate * others)
  if keep >= others:
    return x
  out = []
  for xb, ab in zip(x, cls_attention):
    ranked = sorted(range(others), key=lambda i: -ab[i])
    fused = np.zeros(x.shape[-1])
    for i in ranked[keep:]:
      fused = fused + ab[i] * xb[1 + i]
    out.append(np.stack([xb[0]] + [xb[1 + i] for i in ranked[:keep]] +
                        [fused]))
  return np.stack(out)


def ats_scores(attention, value):
  """Adaptive Token Sampling's scores `[B, N - 1]` of tokens 1..: the class
  token's attention `[B, H, N, N]` summed over heads times the L2 norm of the
  token's whole value `[B, N, H, D]`, normalised to sum to 1."""
  b, n = value.shape[:2]
  scores = np.zeros((b, n - 1))
  for bi in range(b):
    for i in range(1, n):
      scores[bi, i - 1] = (attention[bi, :, 0, i].sum() *
                           np.sqrt((value[bi, i]**2).sum()))
  return scores / scores.sum(-1, keepdims=True)


def ats_sample(x, sizes, scores, num_samples):
  """Adaptive Token Sampling's deterministic inverse transform sampling, one
  example at a time: the CDF of the ascending scores rescaled to [0, 1] is
  read at `num_samples` points evenly spaced from its smallest positive value
  to 1, each taking the nearest entry; a token taken twice counts once.
  Output: the class token, the taken tokens by increasing score, then empty
  slots (zeros of size 0)."""
  b, _, c = x.shape
  out_x = np.zeros((b, 1 + num_samples, c))
  out_sizes = np.zeros((b, 1 + num_samples))
  for bi in range(b):
    order = np.argsort(scores[bi], kind='stable')
    cdf = np.cumsum(scores[bi][order])
    cdf = (cdf - cdf.min()) / max(cdf.max() - cdf.min(), 1e-12)
    positive = cdf[cdf > 0]
    start = positive.min() if positive.size else 0.0
    taken = set()
    for step in np.linspace(0.0, 1.0, num_samples):
      taken.add(int(np.argmin(np.abs(cdf - (start + (1 - start) * step)))))
    out_x[bi, 0], out_sizes[bi, 0] = x[bi, 0], sizes[bi, 0]
    for slot, position in enumerate(sorted(taken)):
      out_x[bi, 1 + slot] = x[bi, order[position] + 1]
      out_sizes[bi, 1 + slot] = sizes[bi, order[position] + 1]
  return out_x, out_sizes


def patch_merger(x, p):
  """PatchMerger (Renggli et al., 2022): `[B, N, C]` -> `[B, M, C]`, each
  output a softmax-over-tokens weighting of X by LN(X) W."""
  logits = layer_norm(x, p['LayerNorm_0']) @ p['queries']['kernel']  # [B, N, M]
  return np.einsum('bnm,bnc->bmc', softmax(logits, axis=1), x)


def reducing_block(x, sizes, p, method, amount, class_token,
                   prop_attention=True):
  """`encoder_block` with size-biased attention and, between the attention
  residual and the MLP, 'tome', 'evit', 'ats' or 'none' -> (x, sizes)."""
  bias = size_bias(sizes, prop_attention)
  y, k, v, w = biased_attention(layer_norm(x, p['LayerNorm_0']),
                                p['MultiHeadDotProductAttention_0'], bias)
  x = x + y
  if method == 'tome':
    x, sizes = tome_merge(x, sizes, k.mean(2), int(amount), class_token)
  elif method == 'evit':
    kept = evit_keep(x, w[:, :, 0, 1:].mean(1), amount)
    if kept.shape[1] != x.shape[1]:
      x, sizes = kept, np.ones(kept.shape[:2])
  elif method == 'ats':
    x, sizes = ats_sample(x, sizes, ats_scores(w, v), int(amount))
  return x + mlp(layer_norm(x, p['LayerNorm_1']), p['MlpBlock_0']), sizes


def sized_pool(x, classifier, sizes):
  """`pool` over the input patches: 'gap'/'gsp' weighted by size, 'gmp' over
  the tokens of positive size."""
  if classifier == 'token':
    return x[:, 0]
  out = np.zeros((x.shape[0], x.shape[-1]))
  for bi in range(x.shape[0]):
    live = [i for i in range(x.shape[1]) if sizes[bi, i] > 0]
    if classifier == 'gmp':
      out[bi] = np.max(x[bi, live], axis=0)
      continue
    out[bi] = sum(sizes[bi, i] * x[bi, i] for i in live)
    if classifier == 'gap':
      out[bi] = out[bi] / sizes[bi].sum()
  return out


def reduced_vit(x, params, model_cfg):
  """`token_learner_vit` with ToMe, EViT or ATS (`tokenizer.token_reduction`)
  from block `tokenlearner_loc` on -> logits."""
  x = np.asarray(x, np.float64)
  tok = model_cfg['tokenizer']
  tokens, _, _ = stem(x, params, model_cfg)
  n_cls = int(model_cfg['classifier'] == 'token')
  if n_cls:
    cls = np.broadcast_to(params['cls'], (tokens.shape[0], 1, tokens.shape[2]))
    tokens = np.concatenate([cls, tokens], 1)
  p = params['Transformer']
  method, loc = tok['token_reduction'], tok['tokenlearner_loc']
  layers = model_cfg['num_layers']
  at = (list(range(loc, layers)) if method == 'tome' else
        [loc] + list(tok.get('pooling_locs') or ()))
  amount = {'tome': tok.get('tome_r'), 'evit': tok.get('keep_rate'),
            'ats': tok.get('num_tokens')}[method]
  y = tokens + p['posembed_input']['pos_embedding']
  sizes = np.ones(y.shape[:2])
  for lyr in range(layers):
    block = p[f'encoderblock_{lyr}']
    if lyr < loc:
      y = encoder_block(y, block)
      continue
    y, sizes = reducing_block(y, sizes, block,
                              method if lyr in at else 'none', amount,
                              bool(n_cls), tok.get('tome_prop_attn', True))
  y = layer_norm(y, p['encoder_norm'])
  return head(sized_pool(y, model_cfg['classifier'], sizes), params)
