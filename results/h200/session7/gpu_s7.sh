#!/usr/bin/env bash
# Session 7 (issue 12) on the lent H200: one background pipeline, harvested by chained device calls.
#   bash results/h200/session7/gpu_s7.sh start              launch the pipeline (scripts/gpu_pipeline.sh)
#   bash results/h200/session7/gpu_s7.sh harvest S MARK     wait up to S seconds for $W/MARK (or $W/stop), then
#                                                           pack the small result files into $OUT/s7.tgz
# The pipeline runs each job alone on the GPU, one after the other:
#   1. mamba-ssm builds (nice 19, in the background: CPU only) while the U-Net + Dice/CE + SGD race run trains
#      (budget harness, 8 training minutes, eager, batch 32: session 5's command)           -> mark unet_done
#   2. two short warm-up runs of budget.yaml, channels_last true then false, each stopped after 4 epochs:
#      torch.compile's warm-up with an empty inductor cache (timed), then the steady-state it/s of each layout;
#      the faster layout is kept for the race                                               -> mark warm_done
#   3. the UU-Mamba race run: budget.yaml, 8 training minutes, that layout, the inductor cache now warm
#                                                                                            -> mark uu_done
#   4. compiled channels-last step rows: 3D paper plan batch 4 (U-Mamba Enc SAM, SGD), then 2D batch 32
#      (U-Net SGD, U-Mamba Enc SGD, SAM) while time is left                                  -> mark done
set -u
cd "$(dirname "$0")/../../.."
TAG=s7 RUNS="unet8 uu8 warm_cl warm_nchw" DATA=.cache/acdc.uucache.npz
. scripts/gpu_pipeline.sh
pipeline() {
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu,clocks.max.sm --format=csv,noheader
  setsid nohup nice -n 19 bash scripts/build_mamba.sh > $W/build.log 2>&1 < /dev/null &
  el "build started; U-Net race run (8 training minutes)"
  timeout 640 python3 -m uu train --params budget --data $DATA --out $W/unet8 --set arch=unet --set loss=dice_ce \
    --set optimizer=sgd --set batch_size=32 --set compile=false --set max_minutes=8 > $W/unet8.log 2>&1
  tail -2 $W/unet8.log; touch $W/unet_done; el "U-Net run done"
  while ! grep -q "built in\|FAILED\|already" $W/build.log 2>/dev/null; do sleep 2; done; tail -1 $W/build.log
  python3 -c "import torch, selective_scan_cuda, mamba_ssm; print('[s7] mamba_ssm', mamba_ssm.__version__)" \
    || { el "NO KERNEL: stopping"; touch $W/stop; return; }
  warm true instance warm_cl; warm false instance warm_nchw  # session 7's norm (budget.yaml's then)
  read cl_its _ < <(rates $W/warm_cl 2>/dev/null || echo 0); read nc_its _ < <(rates $W/warm_nchw 2>/dev/null || echo 0)
  CL=$(python3 -c "print('true' if $cl_its > 1.02 * $nc_its else 'false')")
  echo "channels_last=$CL (it/s: channels-last $cl_its, NCHW $nc_its)" | tee $W/decision.txt; touch $W/warm_done
  el "UU-Mamba race run (8 training minutes, channels_last=$CL)"
  timeout 700 python3 -m uu train --params budget --data $DATA --out $W/uu8 --set max_minutes=8 \
    --set channels_last=$CL --set norm=instance > $W/uu8.log 2>&1
  tail -2 $W/uu8.log; touch $W/uu_done; el "UU-Mamba run done"
  steps 3d 4 umamba_enc:sam,umamba_enc:sgd 300 3d_cl --channels-last cl; el "3D rows done"
  steps 2d 32 unet:sgd,umamba_enc:sgd,umamba_enc:sam 280 2d_cl --channels-last cl; el "2D rows done"
  touch $W/done
}
pipeline_main "$@"
