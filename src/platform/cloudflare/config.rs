//! The configuration from the Worker's bindings: the document in a variable, the secrets it
//! names as Worker secrets (or variables), parsed once per isolate.

use std::cell::RefCell;
use std::rc::Rc;

use worker::Env;

use crate::engine::config::ConfigCache;
use crate::engine::{Config, Error};

/// The configuration document's variable; secrets it names are Worker secrets (or vars).
pub(super) const CONFIG_VAR: &str = "EDGE_PREDICT_CONFIG";

thread_local! {
    /// An isolate serves many requests: the configuration is parsed once per document and
    /// secrets, not per request.
    static CONFIG: RefCell<ConfigCache> = RefCell::new(ConfigCache::default());
    /// The configuration last parsed, with the `env` object it came from. An isolate's bindings
    /// never change (a new variable or secret is a new deployment, so a new isolate), and
    /// workerd hands the Worker's requests the same `env` object (a V8 profile under load no
    /// longer shows the configuration at all): the same object needs no second look at its
    /// document and secrets, which copied each of them into wasm. Another object (a Durable
    /// Object's own `env`, say) is read again, and `CONFIG` still spares the parse.
    static CONFIG_OF_ENV: RefCell<Option<(Env, Rc<Config>)>> = const { RefCell::new(None) };
}

pub(super) fn load_config(env: &Env) -> Result<Rc<Config>, Error> {
    let same = |(seen, config): &(Env, Rc<Config>)| {
        worker::js_sys::Object::is(seen.as_ref(), env.as_ref()).then(|| Rc::clone(config))
    };
    if let Some(config) = CONFIG_OF_ENV.with(|c| c.borrow().as_ref().and_then(same)) {
        return Ok(config);
    }
    let config = read_config(env)?;
    CONFIG_OF_ENV.with(|c| *c.borrow_mut() = Some((env.clone(), Rc::clone(&config))));
    Ok(config)
}

fn read_config(env: &Env) -> Result<Rc<Config>, Error> {
    let doc = env
        .var(CONFIG_VAR)
        .map(|v| v.to_string())
        .map_err(|_| Error::Config { field: CONFIG_VAR.to_owned(), message: "the variable is not set".to_owned() })?;
    let secret =
        |name: &str| env.secret(name).map(|s| s.to_string()).or_else(|_| env.var(name).map(|v| v.to_string())).ok();
    CONFIG.with(|cache| cache.borrow_mut().get(&doc, &secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;
    use worker::wasm_bindgen::{JsCast, JsValue};

    fn env(vars: &[(&str, &str)]) -> Env {
        let object = worker::js_sys::Object::new();
        for (k, v) in vars {
            worker::js_sys::Reflect::set(&object, &JsValue::from_str(k), &JsValue::from_str(v)).unwrap();
        }
        object.unchecked_into()
    }

    #[wasm_bindgen_test]
    fn configuration_comes_from_vars_and_names_secrets() {
        let doc = r#"{"public_base_url": "https://gw.example", "keys": [], "id_secret_name": "IDS",
            "models": {"m": {"upstream": "https://u.example", "api_key_secret_name": "UP_KEY"}}}"#;
        let ids = ("IDS", "request-id-secret-0123456789abcdef0123");
        let config = load_config(&env(&[(CONFIG_VAR, doc), ("UP_KEY", "s3cret"), ids])).unwrap();
        assert_eq!(config.secret(&config.models["m"].api_key).unwrap(), "s3cret");

        let missing_secret = load_config(&env(&[(CONFIG_VAR, doc), ids])).unwrap_err();
        assert!(matches!(&missing_secret, Error::Config { field, .. } if field == "models.m.api_key_secret_name"));
        let missing_doc = load_config(&env(&[])).unwrap_err();
        assert!(matches!(&missing_doc, Error::Config { field, .. } if field == CONFIG_VAR));
        assert_eq!(missing_doc.to_response().status(), 500);
    }
}
