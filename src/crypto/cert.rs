//! placeholder
pub struct Certificate;
