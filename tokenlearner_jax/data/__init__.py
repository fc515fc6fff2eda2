"""The data layer: input pipelines that turn a config into batches.

`input_pipeline.get_data(config, start_step)` is the entry point; it returns a
`batching.Data` (train iterator, padded eval and test batches) for the source
that `config.dataset_name` names (`train=False`: the eval side only, for
evaluating a checkpoint without the train split):
  * input_pipeline.py: tfds datasets by name (and the offline demo builders);
  * image_tfrecords.py: JFT-style multi-label image `tf.Example`s;
  * video_tfrecords.py: Kinetics-style `tf.SequenceExample` video clips;
  * image_preprocessing.py: inception crop, central crop and flips of images;
  * tfrecord_tables.py: the reference's TFRecord tables ('name@N' shard sets
    or globs) and each process's share of their files;
  * batching.py: global batches split by process, padded eval batches with
    masks, per-example seeds and resuming at a step;
  * datasets/: the offline tfds builders `moving_digits` and `multi_digits`,
    made from scikit-learn's digits and registered with tfds on import.
"""
