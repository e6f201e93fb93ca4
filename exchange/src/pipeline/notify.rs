//! Queuing a DSP's notices for after the answer: its loss notice, sampled and substituted.

use std::sync::Arc;

use openrtb::json::JsonStr;
use openrtb::macros::{expand_url, MacroValues};

use crate::fanout::Dsp;
use crate::notices::{Notice, NoticeKind};

/// Queues `lurl` with `values` substituted, unless the DSP turned loss notices off or this
/// one falls outside its sample; true when queued.
pub(crate) fn loss(
    dsp: &Arc<Dsp>,
    lurl: Option<JsonStr<'_>>,
    values: &MacroValues<'_>,
    notices: &mut Vec<Notice>,
) -> bool {
    let Some(lurl) = lurl.map(|l| l.decode()) else {
        return false;
    };
    if !dsp.loss_notices
        || (dsp.loss_notice_sample < 1.0 && rand::random::<f64>() >= dsp.loss_notice_sample)
    {
        return false;
    }
    notices.push(Notice {
        dsp: dsp.clone(),
        kind: NoticeKind::Loss,
        url: expand_url(&lurl, values).into_owned(),
    });
    true
}
