"""`nlpattn race`: at the same wall-clock budget, on real text and real tasks, what does
attention buy over an LSTM/GRU or a CNN, and what does it cost? (issue 18)

    nlpattn race --config configs/race/default.yaml [race.minutes=2 race.seeds=1 ...]
    accelerate launch -m nlpattn race --config configs/race/default.yaml

For each body of `race.bodies` (transformer, lstm, gru, cnn, cnn-se = CNN with SE channel
attention and the spatial gate), with body parameter counts matched within
`race.param_tolerance`: an lr sweep (`race.lrs`, `race.sweep_minutes` of MLM each, best
validation loss wins), MLM pretraining for `race.minutes` on the corpus (one tokenizer, one
token cache, same batches for all), then `nlpattn finetune` from that run on `race.tasks`
(IMDB once per `race.imdb_lengths`) with one recipe and `race.seeds` seeds, on the subsets
`race.max_train_examples` / `race.max_eval_examples`. Output in `output_dir`: race.json,
race.md, race-pretrain.png, race-scores.png, and every run directory (plan.py lists them).
Re-running the same command resumes: finished runs are skipped. Modules: plan (what runs,
checks), stages (running them), report (tables and figures).
"""
