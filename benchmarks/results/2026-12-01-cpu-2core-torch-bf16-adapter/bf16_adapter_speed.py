"""rnnfast.torch.LSTM(H, H).bfloat16() against torch.nn.LSTM(H, H).bfloat16(), same weights and input:
medians of 5 calls after 2 warm-ups, two rounds per row, inference (no_grad) and training
(forward and backward of the float32 sum). Run: python bf16_adapter_speed.py
"""
import time, torch, rnnfast.torch as rt
torch.manual_seed(0)
def med(f, n=5):
    f(); f(); ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[n//2]*1e3
for H, T, B in ((512, 100, 64), (256, 100, 16)):
    ref = torch.nn.LSTM(H, H).bfloat16(); ours = rt.convert(torch.nn.LSTM(H, H)).bfloat16(); ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, H).bfloat16()
    for mode in ("inference", "train"):
        def run(m):
            if mode == "inference":
                with torch.no_grad(): m(x)
            else:
                xi = x.detach().requires_grad_(); m(xi)[0].float().sum().backward()
        r = [(med(lambda: run(ours)), med(lambda: run(ref))) for _ in range(2)]
        print(f"LSTM bf16 T={T} B={B} H={H} {mode}: " + "; ".join(f"rnnfast {a:.1f} ms torch {b:.1f} ms = {b/a:.2f}x" for a, b in r))
