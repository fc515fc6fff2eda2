"""An independent float64 NumPy forward pass of the reference TokenLearner models.

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
  """The reference's `EncoderMod`/`EncoderModFuser`, plus a leading class token."""
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
  groups of `[B, T, H, W, D]`, with the residual."""
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
  logits = np.einsum('gqhd,gkhd->ghqk', heads(q), heads(k)) / np.sqrt(
      a // num_heads)
  out = np.einsum('ghqk,gkhd->gqhd', softmax(logits), heads(v))
  seq = seq + dense(out.reshape(g, n, a), p['out'])
  if axes == 'temporal':
    return seq.reshape(b, h, w, t, d).transpose(0, 3, 1, 2, 4)
  return seq.reshape(x.shape)
