//! Any bytes given to replay: the reader and the whole replay pipeline must
//! never panic, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::facts::Environment;
use tracer_user::pipeline::{Options, Pipeline};
use tracer_user::recording::reader::{self, Item};

fuzz_target!(|data: &[u8]| {
    let Ok((header, mut frames)) = reader::from_reader(data) else { return };
    let mut pipeline = Pipeline::new(Environment::replay(header.facts), Options::default());
    let mut out = Vec::new();
    while let Ok(Some(item)) = frames.next_item() {
        match item {
            Item::Fact(f) => pipeline.env.apply(&f),
            Item::Input(input) => pipeline.process(&input, &mut out),
            Item::End(_) => {}
        }
        out.clear();
    }
    pipeline.finish(&mut out);
});
