//! The CTranslate2 `model.bin` reader behind `dartmouth models convert-whisper`: any bytes are
//! parsed or refused, and every variable of a parsed model can be read back.
#![no_main]

use dartmouth_models::convert::ct2::Ct2Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Ct2Model::parse(data.to_vec()) else {
        return;
    };
    let names: Vec<String> = model.names().map(str::to_string).collect();
    for name in names {
        if let Some(var) = model.get(&name) {
            let _ = model.bytes(var);
        }
        let _ = model.scalar_int(&name);
        let _ = model.values_f32(&name);
        let _ = model.values_f16(&name);
    }
});
